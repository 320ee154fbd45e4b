"""``moldiff-evaluate``: score an SDF / XYZ set with the metrics of docs/metrics.md.

Prints a table (``moldiff.metrics.format_table``) and optionally writes the metrics JSON. Both say
how ``moldiff-sample`` decoded and relaxed the molecules (``decoding``: ``argmax`` / ``map`` / ``mixed``
/ ``unknown`` from the ``moldiff_decoding`` SD tags; ``relax`` likewise from ``moldiff_relax``), so
numbers of corrected and raw samples are never confused. ``posebusters=true`` adds PoseBusters'
molecule-level checks on a seeded sample (``moldiff.metrics.posebusters``; ``pip install 'moldiff[checks]'``).

Bad input (missing file, empty file, unreadable record, an output path that cannot be written, a
missing optional package, ...) ends with one line on stderr and exit status 2; output paths and
optional packages are checked before any work starts. When the reference dataset cannot be built
because its package is missing (``reference=qm9`` without ``qm9pack``), the file is scored without
it, after a one-line warning: novelty and the distribution distances need the reference.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from moldiff.chem.io import MoleculeInputError, draw_grid, read_molecules
from moldiff.cli.common import USER_ERRORS
from moldiff.utils.validate import as_number
from moldiff.metrics import evaluate_molecules, format_table
from moldiff.metrics.posebusters import MissingExtraError
from moldiff.utils.io import atomic_write

if TYPE_CHECKING:
    from moldiff.data.cache import MolCache

PROG = "moldiff-evaluate"
_NONE = (None, "", "null", "none")

#: SD tags that, when equal on every molecule, say how many sampling steps produced them.
STEP_TAGS = ("moldiff_steps", "steps", "num_steps", "n_steps", "sampling_steps")


def notice(message: str) -> None:
    """One line for the user on stderr (stdout carries the table)."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def open_reference(name: str | None, data_root: str | None) -> MolCache | None:
    """The reference cache named by ``reference=`` (``moldiff.data.registry.open_reference``), announcing a
    build on stderr."""
    from moldiff.data.registry import open_reference as open_ref

    return None if name in _NONE else open_ref(str(name), data_root, announce=notice)


def check_output_path(path: str | os.PathLike, key: str) -> Path:
    """Make sure ``path`` can be written as a file (before any work is done).

    The file itself is not created; missing parent folders are allowed (they are created when it
    is written) as long as the nearest existing one is a writable folder.

    Args:
        path: the output file.
        key: the option that names it (for the message), e.g. ``json``.

    Raises:
        ValueError: ``path`` is an existing folder, one of its parents is a file, or the folder
            that would hold it is not writable.
    """
    p = Path(str(path)).expanduser()
    if p.is_dir():
        example = p / ("metrics.json" if key == "json" else "mols.png")
        raise ValueError(f"{key}={path}: is an existing folder; give a file name inside it, e.g. {key}={example}")
    folder = p.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{key}={path}: {folder} is a file, not a folder")
    try:  # a real write probe: permission bits do not tell for root, read-only mounts and the like
        fd, probe = tempfile.mkstemp(prefix=".moldiff-write-check.", dir=folder)
    except OSError as exc:
        raise ValueError(f"{key}={path}: cannot write in {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)
    return p


def _common_steps(mols: list) -> Any:
    for tag in STEP_TAGS:
        values = {m.props.get(tag) for m in mols}
        if len(values) == 1 and None not in values:
            return values.pop()
    return None


def evaluate_file(
    path: str | Path,
    reference: MolCache | None = None,
    skip_invalid: bool = False,
    check_vocab: bool = False,
    bond_inference: str = "edm",
    max_reference: int = 5000,
    seed: int = 0,
    posebusters: bool = False,
    posebusters_max: int | None = 200,
    posebusters_energy: bool = True,
    predict: bool = False,
    predictor: str | None = None,
    predict_targets: dict[str, float] | None = None,
) -> dict:
    """Read ``path`` and evaluate it (what the CLI runs).

    Args:
        path: SDF / XYZ file or folder of XYZ files.
        reference: dataset cache for novelty and the distribution distances; None skips both.
        skip_invalid: skip unreadable records (listed under ``skipped``) instead of failing.
        check_vocab: treat atoms outside the reference's vocabulary as bad input.
        bond_inference: bonds for molecules without any (``edm`` or ``rdkit``).
        max_reference: reference molecules sampled for the distribution distances.
        seed: seed of that sample and of the PoseBusters sample.
        posebusters: also run PoseBusters' molecule-level checks (result under ``posebusters``,
            else None there).
        posebusters_max: check at most this many molecules (seeded sample); None checks all.
        posebusters_energy: include PoseBusters' (slow) internal-energy check.
        predict: also predict each molecule's properties (result under ``predicted_properties``).
        predictor: a predictor checkpoint for ``predict``; None = the shipped QM9 predictor.
        predict_targets: targets to score molecules without ``target_<property>`` tags against.

    Raises:
        MoleculeInputError: unreadable input, or no readable molecule at all.
        moldiff.metrics.posebusters.MissingExtraError: ``posebusters`` without the package.
    """
    if posebusters:
        from moldiff.metrics.posebusters import require_posebusters, sample_indices

        sample_indices(0, posebusters_max)  # rejects a bad posebusters_max before the work
        require_posebusters()
    report: list[str] = []
    vocab = reference.vocab if (reference is not None and check_vocab) else None
    mols = read_molecules(path, skip_invalid=skip_invalid, report=report, vocab=vocab)
    if not mols:
        raise MoleculeInputError(path, f"no readable molecule ({len(report)} records skipped)")
    metrics = evaluate_molecules(mols, reference, bond_inference=bond_inference, max_reference=max_reference,
                                 seed=seed, steps=_common_steps(mols))
    metrics["posebusters"] = None
    if posebusters:
        from moldiff.metrics.posebusters import posebusters_checks

        metrics["posebusters"] = posebusters_checks(mols, max_molecules=posebusters_max, seed=seed,
                                                    bond_inference=bond_inference,  # type: ignore[arg-type]
                                                    energy=posebusters_energy)
    metrics["predicted_properties"] = None
    if predict:
        from moldiff.metrics.properties import predict_properties
        from moldiff.training.property_module import load_property_module

        metrics["predicted_properties"] = predict_properties(mols, load_property_module(predictor), predict_targets)
    metrics["input"] = str(path)
    metrics["skipped_records"] = len(report)
    metrics["skipped"] = report
    return metrics


def predict_targets(cfg: DictConfig) -> dict[str, float]:
    """``predict_targets.<property>=value`` entries that were set (one-line error for a non-number)."""
    out = {}
    for key, value in (cfg.get("predict_targets") or {}).items():
        if value is not None:
            out[str(key)] = as_number(value, f"predict_targets.{key}")
    return out


def _optional_int(value: Any) -> int | None:
    return None if value in _NONE else int(value)


def run(cfg: DictConfig) -> dict:
    """Evaluate as configured, print the table, write the JSON; returns the metrics.

    Output paths and the optional PoseBusters package are checked first, so a typo costs no work.
    """
    json_path = check_output_path(cfg.json, "json") if cfg.json not in _NONE else None
    png_path = check_output_path(cfg.png, "png") if cfg.get("png") not in _NONE else None
    posebusters = bool(cfg.get("posebusters", False))
    posebusters_max = _optional_int(cfg.get("posebusters_max", 200))
    if posebusters:
        from moldiff.metrics.posebusters import require_posebusters, sample_indices

        sample_indices(0, posebusters_max)  # rejects posebusters_max < 1
        require_posebusters()
        energy = bool(cfg.get("posebusters_energy", True))
        notice(f"PoseBusters checks will run on {'all' if posebusters_max is None else f'at most {posebusters_max}'} "
               "molecules after the metrics" + (" (the internal-energy check can take a minute for a strained ring "
                                                "system; posebusters_energy=false skips it)" if energy else ""))
    predict = bool(cfg.get("predict", False))
    if predict:  # an unusable predictor is found before the work
        from moldiff.training.checkpoint import CheckpointError
        from moldiff.training.property_module import load_property_module

        try:
            load_property_module(cfg.get("predictor"))
        except CheckpointError as exc:
            raise ValueError(f"predict=true: {exc}") from None
    if not Path(str(cfg.input)).exists():
        raise MoleculeInputError(cfg.input, "no such file or folder")
    unavailable = None
    try:
        reference = open_reference(cfg.reference, cfg.data_root)
    except ModuleNotFoundError as exc:
        unavailable = f"reference={cfg.reference} unavailable ({exc})"
        notice(f"warning: {unavailable}; scoring without it: novelty and the distribution distances need the reference")
        reference = None
    metrics = evaluate_file(
        cfg.input,
        reference,
        skip_invalid=bool(cfg.skip_invalid),
        check_vocab=bool(cfg.check_vocab),
        bond_inference=str(cfg.bond_inference),
        max_reference=int(cfg.max_reference),
        seed=int(cfg.seed),
        posebusters=posebusters,
        posebusters_max=posebusters_max,
        posebusters_energy=bool(cfg.get("posebusters_energy", True)),
        predict=predict,
        predictor=cfg.get("predictor"),
        predict_targets=predict_targets(cfg),
    )
    metrics["reference_unavailable"] = unavailable
    print(format_table(metrics))
    if metrics["skipped_records"]:
        print(f"skipped {metrics['skipped_records']} unreadable records (listed in the JSON)")
    if png_path is not None:
        mols = read_molecules(cfg.input, skip_invalid=True, report=[])[: int(cfg.png_count)]
        draw_grid(mols, png_path)
        print(f"depictions: {cfg.png}")
    if json_path is not None:
        with atomic_write(json_path) as fh:
            json.dump(metrics, fh, indent=1)
            fh.write("\n")
        print(f"metrics JSON: {cfg.json}")
    return metrics


@hydra.main(config_path="pkg://moldiff.conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (``moldiff-evaluate``): user errors are one line on stderr and exit status 2
    (``MOLDIFF_DEBUG=1`` shows the traceback instead)."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        run(cfg)
    except MissingMandatoryValue as exc:
        if os.environ.get("MOLDIFF_DEBUG"):
            raise
        key = getattr(exc, "full_key", None) or "input"
        print(f"{PROG}: error: {key}=... is required (e.g. input=mols.sdf)", file=sys.stderr)
        sys.exit(2)
    except (*USER_ERRORS, MissingExtraError, OSError) as exc:
        if os.environ.get("MOLDIFF_DEBUG"):
            raise
        msg = str(exc).strip("'\"") if isinstance(exc, KeyError) else str(exc)
        print(f"{PROG}: error: {' '.join(msg.split())}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
