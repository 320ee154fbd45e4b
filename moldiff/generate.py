"""Sampling settings to molecules, without files: the checks of every sampling option, the model and
targets they name, and one batch from noise to tagged ``Molecule`` objects (decoded, optionally relaxed).

Shared by ``moldiff-sample`` (``moldiff.cli.sample``, which adds the resumable output files) and the Python
API (``moldiff.api``). Settings are a ``DictConfig`` with the keys of ``conf/sample.yaml``.
"""

from __future__ import annotations

import csv
import inspect
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch_geometric.data import Batch

from moldiff.chem.molecule import Molecule
from moldiff.chem.relax import RELAX_METHODS
from moldiff.data.graph import data_to_molecules
from moldiff.sampling.prior import sample_num_atoms
from moldiff.sampling.sampler import SAMPLERS, Fragment, sample
from moldiff.training.checkpoint import CheckpointError, LoadedModel, load_model
from moldiff.utils.validate import as_number

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
    """``ckpt=`` as given (a shipped model's name, ``qm9``, ``qm9_fast``, ``qm9_base`` or ``qm9_conditional``,
    becomes its sha256-checked file unless a file of that name exists here); without one, the shipped conditional
    QM9 model when targets are given (else ``None``: the shipped unconditional model)."""
    from moldiff.training.checkpoint import SHIPPED, pretrained_path

    if cfg.ckpt and str(cfg.ckpt) in SHIPPED and not Path(str(cfg.ckpt)).exists():
        return str(pretrained_path(SHIPPED[str(cfg.ckpt)]))
    if cfg.ckpt or not wants_conditioning(cfg):
        return cfg.ckpt

    try:
        return str(pretrained_path("qm9_conditional"))
    except CheckpointError as exc:
        raise ValueError(f"{exc} (targets need a conditional model)") from None



def target_properties(model: LoadedModel, guide=None) -> list[str]:
    """The properties targets are given for: the model's own, or (an unconditional model steered by predictor
    guidance alone) the guide predictor's."""
    return list(model.properties) if model.properties or guide is None else list(guide.properties)



def read_targets(cfg: DictConfig, model: LoadedModel, n: int, guide=None) -> torch.Tensor | None:
    """Raw target values ``[n, P]`` (dataset units, the columns of :func:`target_properties`) from
    ``conditioning.<prop>=value`` or ``conditioning.targets_csv``; NaN where a property is not given (a model
    trained on property subsets, or predictor guidance, takes any subset). ``None``: no targets (unconditional
    sampling)."""
    given = given_targets(cfg)
    props = target_properties(model, guide)
    if not props:
        if given or cfg.conditioning.targets_csv:
            raise ValueError(f"model {model.path} is unconditional; it cannot take targets {sorted(given) or 'from CSV'} "
                             f"(predictor_guidance.predictor= steers it with a property predictor)")
        return None
    subsets = bool((model.hparams.get("conditioning") or {}).get("subsets", False)) or not model.properties
    if cfg.conditioning.targets_csv:
        if given:
            raise ValueError(f"give targets either as conditioning.targets_csv or as conditioning.<property>=, not both "
                             f"(got {sorted(given)} too)")
        t = read_targets_csv(Path(cfg.conditioning.targets_csv), props)
        t = t[torch.arange(n) % len(t)]
    else:
        extra = [k for k in given if k not in props]
        if extra:
            what = "conditions on" if model.properties else "has no condition; the guide predictor predicts"
            raise ValueError(f"model does not condition on {extra}; it {what} {props}")
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



def load_guide(cfg: DictConfig, model: LoadedModel, device: torch.device):
    """The property predictor of ``predictor_guidance.predictor`` (a shipped name such as ``qm9_guide``, or a
    predictor checkpoint), checked against the model's atom vocabulary; ``None`` when not set."""
    from moldiff.training.checkpoint import pretrained_path
    from moldiff.training.property_module import load_property_module

    name = cfg.predictor_guidance.predictor  # resolved: resolve_predictor_guidance
    if not name or str(name) == "none":
        return None
    key = "predictor_guidance.predictor"
    try:
        path = pretrained_path(str(name)) if str(name) in SHIPPED_GUIDES and not Path(str(name)).exists() else str(name)
        guide = load_property_module(path, device)
    except CheckpointError as exc:
        raise ValueError(f"{key}={name}: {exc}") from None
    if guide.vocab.to_dict() != model.vocab.to_dict():
        raise ValueError(f"{key}={name} predicts molecules of another atom vocabulary than model {model.path} "
                         f"({guide.vocab.elements} / {model.vocab.elements})")
    guide_weights(cfg, guide)  # names only the guide's properties
    return guide



#: Shipped property predictors for ``predictor_guidance.predictor`` (trained on the generator's half of QM9).
SHIPPED_GUIDES = ("qm9_guide",)



def guide_targets(targets: torch.Tensor, props: list[str], guide) -> torch.Tensor:
    """Targets ``[n, len(props)]`` -> the guide's columns (NaN for a property it is not given)."""
    out = torch.full((targets.shape[0], len(guide.properties)), float("nan"))
    for k, p in enumerate(guide.properties):
        if p in props:
            out[:, k] = targets[:, props.index(p)]
    return out



#: Predictor-guidance step size and interval when neither the command nor the model gives them.
PREDICTOR_GUIDANCE_DEFAULTS = {"scale": 1.0, "interval": [0.1, 1.0], "type_scale": 0.0}



def resolve_predictor_guidance(cfg: DictConfig, model: LoadedModel) -> None:
    """``predictor_guidance.predictor=null`` -> the guide the model records (:attr:`LoadedModel.recorded_predictor_guidance`;
    the shipped conditional QM9 model: ``qm9_guide``) when targets are given, else ``none``; ``scale`` / ``interval`` left null -> the
    model's recorded values, else :data:`PREDICTOR_GUIDANCE_DEFAULTS`. Values given on the command line win."""
    own = model.recorded_predictor_guidance or {}
    pg = cfg.predictor_guidance
    if pg.predictor not in (None, "none") and not wants_conditioning(cfg):
        log.warning("warning: predictor_guidance.predictor=%s has no effect without targets (conditioning.<property>=)",
                    pg.predictor)
    with open_dict(cfg):
        if pg.predictor is None:
            # the recorded guide steers toward targets: without any it is not loaded
            pg.predictor = own.get("predictor", "none") if wants_conditioning(cfg) else "none"
        recorded = own if str(pg.predictor) == own.get("predictor") else {}
        for key in ("scale", "interval", "type_scale"):
            if pg.get(key) is None:
                pg[key] = recorded.get(key, PREDICTOR_GUIDANCE_DEFAULTS[key])
        if pg.get("weights") is None:
            pg.weights = dict(recorded.get("weights") or {})
    check_predictor_guidance(cfg)



def type_scale(cfg: DictConfig) -> float:
    """``predictor_guidance.type_scale`` as a float (0 when not set: coordinates only)."""
    return float(cfg.predictor_guidance.get("type_scale") or 0.0)


def guide_weights(cfg: DictConfig, guide) -> dict[str, float]:
    """``predictor_guidance.weights`` as ``{property: float}``, checked against the guide's properties."""
    weights = {str(p): float(w) for p, w in (cfg.predictor_guidance.get("weights") or {}).items()}
    unknown = sorted(set(weights) - set(guide.properties))
    if unknown:
        raise ValueError(f"predictor_guidance.weights names {unknown}; the guide predicts {guide.properties}")
    return weights



def check_predictor_guidance(cfg: DictConfig) -> None:
    """``predictor_guidance.scale`` / ``interval`` / ``max_step`` / ``type_scale`` / ``max_logit_step`` (one-line
    ``ValueError`` naming the option; null = not given yet)."""
    pg = cfg.predictor_guidance
    if pg.scale is not None:
        as_number(pg.scale, "predictor_guidance.scale", positive=False)
        if float(pg.scale) < 0:
            raise ValueError(f"predictor_guidance.scale must be >= 0, got {pg.scale}")
    try:
        if pg.interval is not None:
            parse_guidance_interval(pg.interval)
    except ValueError:
        raise ValueError(f"predictor_guidance.interval must be [lo, hi] with 0 <= lo <= hi <= 1 (diffusion times), "
                         f"got {pg.interval!r}") from None
    if pg.max_step is not None:
        as_number(pg.max_step, "predictor_guidance.max_step (Angstrom, or null)", positive=True)
    if pg.get("type_scale") is not None:
        as_number(pg.type_scale, "predictor_guidance.type_scale", positive=False)
        if float(pg.type_scale) < 0:
            raise ValueError(f"predictor_guidance.type_scale must be >= 0, got {pg.type_scale}")
    if pg.get("max_logit_step") is not None:
        as_number(pg.max_logit_step, "predictor_guidance.max_logit_step (or null)", positive=True)
    weights = pg.get("weights")
    if weights is not None:
        if not OmegaConf.is_dict(weights) and not isinstance(weights, dict):
            raise ValueError(f"predictor_guidance.weights must be a mapping such as {{alpha: 0.5}}, got {weights!r}")
        for p, w in weights.items():
            if as_number(w, f"predictor_guidance.weights.{p}") < 0:
                raise ValueError(f"predictor_guidance.weights.{p} must be >= 0, got {w}")



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



def parse_guidance_interval(value: object) -> tuple[float, float]:
    """``[lo, hi]`` with ``0 <= lo <= hi <= 1`` (a one-line ``ValueError`` otherwise)."""
    try:
        lo, hi = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not 0.0 <= lo <= hi <= 1.0 or isinstance(value, str):
        raise ValueError(f"guidance_interval must be [lo, hi] with 0 <= lo <= hi <= 1 (diffusion times), or null, "
                         f"got {value!r}")
    return lo, hi


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
    if cfg.guidance_interval is not None:
        parse_guidance_interval(cfg.guidance_interval)
    for key, value in given_targets(cfg).items():
        as_number(value, f"conditioning.{key}")
    for key in ("time_power", "temperature"):
        if cfg[key] is not None:
            as_number(cfg[key], key, positive=True)
    parse_num_atoms(cfg.num_atoms)
    check_predictor_guidance(cfg)



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



def resolve_guidance(cfg: DictConfig, model: LoadedModel, targets: torch.Tensor | None = None) -> None:
    """``guidance_scale=null`` / ``guidance_interval=null`` -> the model's defaults for the properties given in
    ``targets`` (the columns that hold a value; :meth:`LoadedModel.guidance_for`), or its overall default
    (weight 1 on every step when it records none)."""
    given = [p for k, p in enumerate(model.properties) if targets is not None and not torch.isnan(targets[:, k]).all()]
    scale, interval = model.guidance_for(given)
    with open_dict(cfg):
        if cfg.guidance_scale is None:
            cfg.guidance_scale = scale
        cfg.guidance_interval = list(parse_guidance_interval(interval if cfg.guidance_interval is None
                                                             else cfg.guidance_interval))



def resolve_sampler_settings(cfg: DictConfig, model: LoadedModel) -> None:
    """``time_power=null`` / ``temperature=null`` -> the model's recommended values for ``cfg.steps``
    (:meth:`LoadedModel.sampler_defaults`: the default QM9 model records ``time_power=1.5 temperature=0.25``
    for 20 to 25 steps; otherwise 1 and 1). Values that were given are kept."""
    own = model.sampler_defaults(int(cfg.steps))
    with open_dict(cfg):
        for key in ("time_power", "temperature"):
            if cfg[key] is None:
                cfg[key] = own[key]



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


def few_step_hint(cfg: DictConfig, model: LoadedModel) -> str | None:
    """A one-line note when a shipped QM9 model samples with few steps and other settings would give it more
    stable molecules; else None. Call after :func:`resolve_sampler_settings`.

    * the undistilled model (``ckpt=qm9_base``) with 10 to 50 steps: the default model, distilled for few
      steps, gives more stable molecules;
    * a model that records sampler settings for this step count (the default model: ``time_power=1.5
      temperature=0.25`` at 20 to 25 steps), sampled with other values given on the command line.
    """
    from moldiff.training.checkpoint import PRETRAINED_DIR, SHIPPED

    steps = int(cfg.steps)
    if Path(model.path).resolve() == (PRETRAINED_DIR / f"{SHIPPED['qm9_base']}.pt").resolve() and 10 <= steps <= 50:
        return (f"note: for steps={steps}, the default model (no ckpt=; the shipped model distilled for few steps) "
                f"gives more stable molecules than this one")
    own = model.recorded_sampler_settings(steps)
    if own and any(float(cfg[k]) != v for k, v in own.items()):
        settings = " ".join(f"{k}={v:g}" for k, v in own.items())
        return (f"note: for steps={steps} this model records {settings} (left out, or null, they are used), "
                f"which give it more stable molecules")
    return None



def predictor_guidance_tag(cfg: DictConfig, guide) -> str:
    """The ``predictor_guidance`` SD tag: guide, scale, interval, non-default weights, atom-type step."""
    pg, weights, types = cfg.predictor_guidance, guide_weights(cfg, guide), type_scale(cfg)
    return (f"{Path(str(pg.predictor)).name} scale {float(pg.scale):g} at t "
            f"{' to '.join(f'{float(v):g}' for v in pg.interval)}"
            + ("" if not weights else ", weights " + " ".join(f"{p}={w:g}" for p, w in sorted(weights.items())))
            + (f", types {types:g}" if types else ""))


def tag_molecules(mols: list[Molecule], lo: int, cfg: DictConfig, model: LoadedModel, statuses: list[str] | None,
                  cond: torch.Tensor | None, fragment: Fragment | None, guide=None) -> None:
    """Name the molecules of a batch starting at index ``lo`` and record the sampling settings as SD tags."""
    steer = None if guide is None or cond is None else predictor_guidance_tag(cfg, guide)
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
            for p, val in zip(target_properties(model, guide), cond[k].tolist()):
                if not np.isnan(val):
                    m.props[f"target_{p}"] = float(val)
            if model.properties:
                m.props["guidance_scale"] = float(cfg.guidance_scale)
                m.props["guidance_interval"] = " ".join(f"{v:g}" for v in cfg.guidance_interval)
            if steer is not None:
                m.props["predictor_guidance"] = steer
        if fragment is not None:
            m.props["inpaint_fixed_atoms"] = fragment.num_atoms



def sample_batch(b: int, cfg: DictConfig, model: LoadedModel, targets: torch.Tensor | None,
                 fragment: Fragment | None, num_atoms: object,
                 device: torch.device, guide=None) -> tuple[list[Molecule], list[Molecule], int]:
    """Sample batch ``b`` (``guide``: the property predictor of predictor guidance, :func:`load_guide`);
    returns ``(molecules to write, unrelaxed molecules, molecules sampled)``."""
    from moldiff.sampling.guidance import PredictorGuidance

    n, bs = cfg.n_samples, cfg.batch_size
    lo, hi = b * bs, min(n, (b + 1) * bs)
    min_atoms = fragment.num_atoms + 1 if fragment else 1
    gen = torch.Generator(device="cpu").manual_seed(int(cfg.seed) * 1_000_003 + b)
    counts = sample_num_atoms(hi - lo, model.statistics["num_atoms_hist"], num_atoms, gen, min_atoms=min_atoms)
    dev_gen = gen if device.type == "cpu" else torch.Generator(device=device).manual_seed(int(cfg.seed) * 1_000_003 + b)
    cond = guided = hook = None
    if targets is not None:
        cond = targets[lo:hi]
        if model.properties:
            guided = model.denoiser_fn(model.normalize(cond).to(device))
        if guide is not None:
            pg = cfg.predictor_guidance
            hook = PredictorGuidance(guide, guide_targets(cond, target_properties(model, guide), guide), float(pg.scale),
                                    tuple(pg.interval), None if pg.max_step is None else float(pg.max_step),
                                    guide_weights(cfg, guide), type_scale=type_scale(cfg),
                                    max_logit_step=None if pg.get("max_logit_step") is None else float(pg.max_logit_step))
    extra = {"return_probs": True} if cfg.decode == "map" else {}
    out = sample(
        model.diffusion, model.denoiser_fn(None), counts, steps=cfg.steps, sampler=cfg.sampler,
        time_power=float(cfg.time_power), temperature=float(cfg.temperature),
        guided_denoiser=guided, guidance_scale=cfg.guidance_scale, fragment=fragment,
        guidance_interval=tuple(cfg.guidance_interval),  # set by resolve_guidance
        generator=dev_gen, device=device, prediction_hook=hook, **extra,
    )
    statuses = None
    if cfg.decode == "map":
        out, statuses = map_decode_output(out, cfg, model, fragment)
    mols = data_to_molecules(out.cpu(), model.vocab)
    finite = [bool(np.isfinite(m.pos).all()) for m in mols]
    if not all(finite):
        log.warning("batch %d: %d molecules with non-finite coordinates were dropped", b, finite.count(False))
    tag_molecules(mols, lo, cfg, model, statuses, cond, fragment, guide)
    kept = [m for m, ok in zip(mols, finite) if ok]
    raw = kept
    if cfg.relax != "none":
        kept, raw = relax_batch(kept, cfg, fragment.num_atoms if fragment is not None else 0)
    return kept, raw, len(mols)

