"""Run by test_ddp.py: 2-process DDP (gloo, CPU) through moldiff.cli.train.train, recording what each rank saw.

Usage: python ddp_script.py DATA_ROOT OUT [OVERRIDE ...]

Writes ``OUT/rank<r>.json``: the molecule indices the rank trained on and the run folder it used. The run
folder is ``run_dir`` if an override sets it, else the default (a new timestamped folder under the
working directory).
"""

import json
import logging
import os
import sys
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_module

from moldiff.cli.train import train


class Recorder(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.seen: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen += batch.idx.tolist()

    def on_train_end(self, trainer, pl_module):
        record = {"seen": self.seen, "run_dir": str(Path(trainer.default_root_dir).resolve()),
                  "checkpoint_dir": str(Path(trainer.checkpoint_callback.dirpath).resolve())}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def main() -> None:
    data_root, out, extra = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    out.mkdir(parents=True, exist_ok=True)
    with initialize_config_module("moldiff.conf", version_base="1.3"):
        cfg = compose("train", overrides=[
            "model=tiny", "trainer=ddp", "trainer.devices=2", "data.limit=300", "data.subset=64",
            "data.batch_size=8", "data.val_size=8", "trainer.max_steps=4", "checkpoint.every_n_train_steps=2",
            "trainer.enable_progress_bar=false", f"data.root={data_root}", "optim.warmup_steps=1", *extra,
        ])
    train(cfg, extra_callbacks=[Recorder(out)])


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    main()
