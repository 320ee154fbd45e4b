"""``moldiff-evaluate``: score an SDF / XYZ set with the metrics of docs/metrics.md.

Prints a table (``moldiff.metrics.format_table``) and optionally writes the metrics JSON. Both say
how ``moldiff-sample`` decoded and relaxed the molecules (``decoding``: ``argmax`` / ``map`` / ``mixed``
/ ``unknown`` from the ``moldiff_decoding`` SD tags; ``relax`` likewise from ``moldiff_relax``), so
numbers of corrected and raw samples are never confused.
Bad input (missing file, empty file, unreadable record, ...) ends with one line on stderr naming
the file and record, and exit status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from moldiff.chem.io import MoleculeInputError, draw_grid, read_molecules
from moldiff.metrics import evaluate_molecules, format_table
from moldiff.utils.io import atomic_write

if TYPE_CHECKING:
    from moldiff.data.cache import MolCache

#: SD tags that, when equal on every molecule, say how many sampling steps produced them.
STEP_TAGS = ("moldiff_steps", "steps", "num_steps", "n_steps", "sampling_steps")


def open_reference(name: str | None, data_root: str | None) -> MolCache | None:
    """A reference cache: None, a cache folder, or a dataset name (built by the registry if missing)."""
    if name in (None, "", "null", "none"):
        return None
    from moldiff.data.cache import MolCache  # imported here: torch is only needed with a reference

    p = Path(str(name))
    if (p / "meta.json").exists():
        return MolCache(p)
    from moldiff.data.registry import prepare_dataset

    return prepare_dataset(str(name), root=data_root)


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
) -> dict:
    """Read ``path`` and evaluate it (what the CLI runs).

    Raises:
        MoleculeInputError: unreadable input, or no readable molecule at all.
    """
    report: list[str] = []
    vocab = reference.vocab if (reference is not None and check_vocab) else None
    mols = read_molecules(path, skip_invalid=skip_invalid, report=report, vocab=vocab)
    if not mols:
        raise MoleculeInputError(path, f"no readable molecule ({len(report)} records skipped)")
    metrics = evaluate_molecules(mols, reference, bond_inference=bond_inference, max_reference=max_reference,
                                 seed=seed, steps=_common_steps(mols))
    metrics["input"] = str(path)
    metrics["skipped_records"] = len(report)
    metrics["skipped"] = report
    return metrics


def run(cfg: DictConfig) -> dict:
    """Evaluate as configured, print the table, write the JSON; returns the metrics."""
    reference = open_reference(cfg.reference, cfg.data_root)
    metrics = evaluate_file(
        cfg.input,
        reference,
        skip_invalid=bool(cfg.skip_invalid),
        check_vocab=bool(cfg.check_vocab),
        bond_inference=str(cfg.bond_inference),
        max_reference=int(cfg.max_reference),
        seed=int(cfg.seed),
    )
    print(format_table(metrics))
    if metrics["skipped_records"]:
        print(f"skipped {metrics['skipped_records']} unreadable records (listed in the JSON)")
    if cfg.get("png"):
        mols = read_molecules(cfg.input, skip_invalid=True, report=[])[: int(cfg.png_count)]
        draw_grid(mols, cfg.png)
        print(f"depictions: {cfg.png}")
    if cfg.json:
        with atomic_write(cfg.json) as fh:
            json.dump(metrics, fh, indent=1)
            fh.write("\n")
        print(f"metrics JSON: {cfg.json}")
    return metrics


@hydra.main(config_path="pkg://moldiff.conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (``moldiff-evaluate``)."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        run(cfg)
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", None) or "input"
        print(f"moldiff-evaluate: error: {key}=... is required (e.g. input=mols.sdf)", file=sys.stderr)
        sys.exit(2)
    except (MoleculeInputError, FileNotFoundError, ValueError) as exc:
        print(f"moldiff-evaluate: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
