"""``moldiff-sample``: generate molecules from a checkpoint (default: the shipped QM9 model)."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from moldiff.chem.molecule import Molecule
from moldiff.cli.common import friendly_errors
from moldiff.generate import (
    check_decode_relax,
    check_fragment_fits,
    check_numbers,
    decode_settings,
    default_ckpt,
    few_step_hint,
    guide_weights,
    load_checkpoint,
    load_guide,
    parse_num_atoms,
    pick_device,
    read_fragment,
    read_targets,
    resolve_guidance,
    resolve_predictor_guidance,
    resolve_sampler_settings,
    sample_batch,
    type_scale,
    warn_untrained_settings,
)
from moldiff.sampling.sampler import Fragment
from moldiff.sampling.writer import ResumableSDFWriter
from moldiff.training.checkpoint import LoadedModel
from moldiff.training.checkpoint import sha256 as file_sha256

log = logging.getLogger("moldiff.sample")


def raw_path(out: str | Path) -> Path:
    """``<out stem>.raw.sdf`` next to ``out`` (``mols.sdf`` -> ``mols.raw.sdf``)."""
    out = Path(out)
    name = out.name[:-3] if out.name.endswith(".gz") else out.name
    return out.with_name(Path(name).stem + ".raw.sdf")


# ---------------------------------------------------------------- checking the command before any work


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


def run_settings(cfg: DictConfig, model: LoadedModel, targets: torch.Tensor | None, num_atoms: object,
                 device: torch.device, guide=None) -> dict:
    """Everything that changes the molecules written: a rerun resumes only with identical settings."""
    pg = cfg.predictor_guidance
    steer = {} if guide is None or targets is None else {"predictor_guidance": {
        "predictor": str(pg.predictor), "sha256": file_sha256(guide.source_path), "scale": float(pg.scale),
        "interval": [float(v) for v in pg.interval], "max_step": None if pg.max_step is None else float(pg.max_step),
        "weights": guide_weights(cfg, guide),
        # only when set, so that runs from before the option existed still resume
        **({"type_scale": type_scale(cfg), "max_logit_step": pg.get("max_logit_step")} if type_scale(cfg) else {})}}
    return {**steer,
        "ckpt": model.path, "ckpt_sha256": file_sha256(model.path), "n_samples": cfg.n_samples, "steps": cfg.steps,
        "sampler": cfg.sampler, "time_power": float(cfg.time_power),
        "temperature": float(cfg.temperature), "seed": cfg.seed, "batch_size": cfg.batch_size,
        "num_atoms": num_atoms,
        "guidance_scale": cfg.guidance_scale, "inpaint": cfg.inpaint.sdf,
        **({"guidance_interval": list(cfg.guidance_interval)} if model.properties else {}),
        "targets": None if targets is None else [[None if np.isnan(v) else v for v in targets[0].tolist()]]
        if not cfg.conditioning.targets_csv
        else cfg.conditioning.targets_csv,
        "device": device.type, **decode_settings(cfg),
    }


# ---------------------------------------------------------------- sampling


def sample_into(writer: ResumableSDFWriter, raw_writer: ResumableSDFWriter | None, cfg: DictConfig,
                model: LoadedModel, targets: torch.Tensor | None, fragment: Fragment | None, num_atoms: object,
                device: torch.device, guide=None) -> bool:
    """Sample the batches the writers still lack; ``False`` when Ctrl-C stopped it (finished batches are kept)."""
    writers = [w for w in (writer, raw_writer) if w is not None]
    n, bs = cfg.n_samples, cfg.batch_size
    bar = tqdm(total=n, initial=min(writer.batches_done * bs, n), desc="sampling", unit="mol",
               disable=not cfg.progress, file=sys.stderr)
    try:
        for b in range((n + bs - 1) // bs):
            if all(b < w.batches_done for w in writers):
                continue
            kept, raw, sampled = sample_batch(b, cfg, model, targets, fragment, num_atoms, device, guide)
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
    resolve_predictor_guidance(cfg, model)
    guide = load_guide(cfg, model, device)
    targets = read_targets(cfg, model, cfg.n_samples, guide)
    resolve_guidance(cfg, model, targets)
    resolve_sampler_settings(cfg, model)
    fragment = read_fragment(cfg.inpaint.sdf, model) if cfg.inpaint.sdf else None
    if fragment is not None:
        check_fragment_fits(cfg, model, num_atoms, fragment)
    warn_untrained_settings(cfg, model, num_atoms)
    hint = few_step_hint(cfg, model)
    if hint:
        log.warning(hint)
    settings = run_settings(cfg, model, targets, num_atoms, device, guide)
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
        complete = sample_into(writer, raw_writer, cfg, model, targets, fragment, num_atoms, device, guide)
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
