"""One training chunk on a bare machine: train for N minutes, then leave everything needed to go on in OUT.

Run through ``scripts/gpu_train.sh`` (which installs hydra-core/omegaconf from a local wheel folder when
they are missing). Needs torch, torch-geometric, e3nn and lightning, and an already prepared dataset cache
(``--data-root``): RDKit is not needed.

  scripts/gpu_train.sh --out OUT --minutes 6 --total-minutes 8                # first chunk, from scratch
  scripts/gpu_train.sh --out OUT2 --minutes 2 --total-minutes 8 --resume OUT/resume.ckpt
  scripts/gpu_train.sh --out OUT --minutes 6 --init-from moldiff/pretrained/qm9_default.pt   # warm start

Writes into OUT (each file at most 16 MiB, so that every one can be copied off a machine that limits
file sizes):
  resume.ckpt            the resume checkpoint (raw weights, optimizer, EMA, step counters, timer), or
  resume.ckpt.part0, ... the same split into 15 MiB parts when larger (``--resume`` takes either form)
  model.pt, model.json   the EMA weights exported as a shipped model (sha256 + training record)
  metrics.csv            this chunk's training log (losses, learning rate, molecules/s)
  record.json            steps, epochs, wall time, hardware, molecules/s, the command line
The Lightning run folder (all checkpoints, logs) is ``--run-dir`` (default OUT/run).
Anything after ``--`` is passed to the training config as Hydra overrides (e.g. ``model=small``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

PART_BYTES = 15 * 1024 * 1024


def hms(minutes: float) -> str:
    """Minutes -> Lightning's ``DD:HH:MM:SS``."""
    s = max(int(round(minutes * 60)), 1)
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def join_parts(path: Path, dest: Path) -> Path:
    """``path`` itself, or the file rebuilt from ``path.part0``, ``path.part1``, ... into ``dest``."""
    if path.exists():
        return path
    parts = sorted(path.parent.glob(path.name + ".part*"), key=lambda p: int(p.suffix[len(".part"):]))
    if not parts:
        raise SystemExit(f"--resume {path}: neither the file nor its parts ({path.name}.part0, ...) exist")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        for p in parts:
            out.write(p.read_bytes())
    return dest


def split_file(src: Path, out_dir: Path, name: str) -> list[Path]:
    """Copy ``src`` to ``out_dir/name``, or to ``name.part0..`` of at most ``PART_BYTES`` each."""
    data = src.read_bytes()
    if len(data) <= PART_BYTES:
        shutil.copyfile(src, out_dir / name)
        return [out_dir / name]
    paths = []
    for k in range(0, len(data), PART_BYTES):
        p = out_dir / f"{name}.part{k // PART_BYTES}"
        p.write_bytes(data[k : k + PART_BYTES])
        paths.append(p)
    return paths


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"1x {torch.cuda.get_device_name(0)}"
    import os

    return f"{os.cpu_count()} CPU cores, no GPU"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: list[str] = []
    if "--" in argv:
        k = argv.index("--")
        argv, overrides = argv[:k], argv[k + 1 :]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (created)")
    ap.add_argument("--minutes", type=float, required=True, help="training time of this chunk")
    ap.add_argument("--total-minutes", type=float, default=None, help="training budget of the whole run (LR decay)")
    ap.add_argument("--resume", type=Path, default=None, help="resume checkpoint (or the first name of its parts)")
    ap.add_argument("--init-from", type=Path, default=None, help="warm start from these weights (not with --resume)")
    ap.add_argument("--experiment", default="qm9")
    ap.add_argument("--data-root", default=str(ROOT / "data" / "processed"))
    ap.add_argument("--run-dir", type=Path, default=None, help="Lightning run folder (default OUT/run)")
    ap.add_argument("--name", default="qm9_default", help="name recorded for the exported model")
    ap.add_argument("--matmul-precision", default="high", choices=("highest", "high", "medium"),
                    help="torch.set_float32_matmul_precision: 'high' lets float32 matrix products use TF32 "
                         "(10-bit significand) on the GPU; 'highest' keeps them in full float32")
    a = ap.parse_args(argv)
    if a.resume and a.init_from:
        raise SystemExit("give --resume or --init-from, not both")

    import logging

    import torch
    from hydra import compose, initialize_config_dir

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")

    from moldiff.cli.train import train

    torch.set_float32_matmul_precision(a.matmul_precision)
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_dir = (a.run_dir or out / "run").resolve()
    ckpt = join_parts(a.resume, run_dir / "checkpoints" / "resume.ckpt") if a.resume else None
    cli = [
        f"experiment={a.experiment}",
        f"run_dir={run_dir}",
        f"data.root={a.data_root}",
        f"trainer.max_time={hms(a.minutes)}",
    ]
    if a.total_minutes:
        cli.append(f"optim.total_minutes={a.total_minutes}")
    if ckpt:
        cli.append(f"ckpt_path={ckpt}")
    if a.init_from:
        cli.append(f"init_from={a.init_from.resolve()}")
    cli += ["trainer=gpu"] if torch.cuda.is_available() else ["trainer=cpu", "data.num_workers=0"]
    cli += overrides
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=cli)
    start = time.time()
    result = train(cfg)
    wall = time.time() - start
    trainer = result["trainer"]
    from moldiff.training.callbacks import ThroughputLogger

    rates = [cb.average() for cb in trainer.callbacks if isinstance(cb, ThroughputLogger)]
    last = run_dir / "checkpoints" / "last.ckpt"
    parts = split_file(last, out, "resume.ckpt")
    import export_pretrained

    hardware = device_name()
    recipe = "scripts/gpu_train.sh " + " ".join(argv) + (" -- " + " ".join(overrides) if overrides else "")
    export_pretrained.main([str(last), "--name", "model", "--hardware", hardware, "--recipe", recipe, "--out-dir", str(out)])
    logs = sorted((run_dir / "logs").rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if logs:
        shutil.copyfile(logs[-1], out / "metrics.csv")
    record = {
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "chunk_minutes": round(wall / 60, 2),
        "molecules_per_second": round(rates[0]) if rates and rates[0] else None,
        "hardware": hardware,
        "overrides": cli,
        "resume_files": [p.name for p in parts],
        "metrics": result["metrics"],
        "model_name": a.name,
        "recipe": recipe,
    }
    (out / "record.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("global_step", "epoch", "chunk_minutes", "molecules_per_second", "hardware")}))


if __name__ == "__main__":
    main()
