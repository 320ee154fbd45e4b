"""``moldiff-prepare``: build (or check) a dataset cache and print its summary.

Examples::

    moldiff-prepare data=qm9
    moldiff-prepare data=sdf data.path=my_confs.sdf
    moldiff-prepare data=geom data.path=/path/to/rdkit_folder
    moldiff-prepare data=nci force=true

User errors (unknown dataset, missing file or package, bad record, bad option) print one line
``error: ...`` on stderr and exit with code 2; set ``MOLDIFF_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from moldiff.config import conf_root

PROG = "moldiff-prepare"


def known_datasets() -> list[str]:
    """Names of the ``data`` config group (``conf/data/*.yaml`` shipped as ``moldiff.conf``)."""
    folder = conf_root() / "data"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _fail(msg: str) -> None:
    print(f"error: {' '.join(str(msg).split())}", file=sys.stderr)
    sys.exit(2)


def _check_data_choice(argv: Sequence[str]) -> None:
    """Exit 2 with the known names when ``data=<name>`` names no config (before Hydra's long message)."""
    known = known_datasets()
    for arg in argv:
        m = re.fullmatch(r"[+~]{0,2}data=(.*)", arg)
        if m and m.group(1) not in known:
            _fail(f"unknown dataset {m.group(1)!r}; known datasets: {', '.join(known)}")


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _format_report(report: dict, indent: str = "  ", max_items: int = 10) -> list[str]:
    """Nested report -> indented lines; long lists show their first ``max_items`` entries, one a line."""
    lines = []
    for k, v in report.items():
        if isinstance(v, dict) and k != "options":
            lines.append(f"{indent}{k}:")
            lines.extend(_format_report(v, indent + "  ", max_items))
        elif isinstance(v, list) and v and (len(v) > 4 or len(str(v)) > 100):
            lines.append(f"{indent}{k}: ({len(v)})")
            for item in v[:max_items]:
                text = ", ".join(f"{a}: {b}" for a, b in item.items()) if isinstance(item, dict) else str(item)
                lines.append(f"{indent}  - {text}")
            if len(v) > max_items:
                lines.append(f"{indent}  ... ({len(v) - max_items} more)")
        else:
            lines.append(f"{indent}{k}: {v}")
    return lines


def summarize(cache: Any) -> str:
    """A human-readable summary of an opened ``MolCache``."""
    import numpy as np

    meta = cache.meta
    stats = meta.get("statistics", {})
    vocab = cache.vocab
    counts = cache.num_atoms()
    size = sum(f.stat().st_size for f in Path(cache.path).iterdir() if f.is_file())
    splits = meta.get("split_sizes", {})
    halves = [int((cache.half == h).sum()) for h in (0, 1)]
    lines = [
        f"dataset     {meta.get('name')} (recipe version {meta.get('recipe_version')})",
        f"cache       {Path(cache.path).resolve()} ({_human_size(size)} on disk)",
        f"molecules   {len(cache):,} records: train {splits.get('train', 0):,} / val {splits.get('val', 0):,} / "
        f"test {splits.get('test', 0):,} (train halves {halves[0]:,} + {halves[1]:,})",
    ]
    if len(counts):
        lines.append(
            f"atoms       {int(counts.min())}-{int(counts.max())} per molecule, mean {float(np.mean(counts)):.1f}"
            f" (train mean {stats.get('mean_num_atoms', float('nan')):.1f})"
        )
    if stats:
        el = "  ".join(f"{e} {p:.4f}" for e, p in zip(vocab.elements, stats.get("atom_type_marginal", [])))
        ch = "  ".join(
            f"{q:+d} {p:.4f}" if q else f"0 {p:.4f}" for q, p in zip(vocab.charges, stats.get("charge_marginal", []))
        )
        bo = "  ".join(f"{b} {p:.4f}" for b, p in zip(vocab.bonds, stats.get("bond_marginal", [])))
        lines += [f"elements    {el}", f"charges     {ch}", f"bonds       {bo}  (over all atom pairs, train)"]
    units = meta.get("units", {})
    for p in cache.prop_names:
        mean, std = stats.get("prop_mean", {}).get(p), stats.get("prop_std", {}).get(p)
        unit = f" {units[p]}" if units.get(p) else ""
        lines.append(f"property    {p}: mean {mean:.4g}, std {std:.4g}{unit}")
    report = meta.get("report") or {}
    if report:
        lines.append("build report:")
        lines.extend(_format_report(report))
    return "\n".join(lines)


@hydra.main(config_path="pkg://moldiff.conf", config_name="prepare", version_base="1.3")
def _run(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    debug = bool(os.environ.get("MOLDIFF_DEBUG"))
    try:
        data = OmegaConf.to_container(cfg.data, resolve=True, throw_on_missing=True)
        from moldiff.data.config import open_dataset

        cache = open_dataset(data, force=bool(cfg.force))
    except MissingMandatoryValue as exc:
        if debug:
            raise
        _fail(f"{exc.full_key} is required: set it on the command line, e.g. {exc.full_key}=...")
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure is reported in one line
        if debug:
            raise
        msg = str(exc).strip("'\"") if isinstance(exc, KeyError) else str(exc)
        if not isinstance(exc, (ValueError, OSError, ModuleNotFoundError, KeyError)):
            msg = f"{type(exc).__name__}: {msg}"
        _fail(msg)
    print(summarize(cache))


def main() -> None:
    """Console entry point (``moldiff-prepare``)."""
    _check_data_choice(sys.argv[1:])
    try:
        _run()
    except SystemExit as exc:
        if exc.code not in (0, None, 2):  # Hydra's own usage errors (bad override, ...)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
