"""Run by test_ddp.py: 2-process DDP (gloo, CPU) through moldiff.cli.train.train, recording what each rank saw.

Usage: python ddp_script.py DATA_ROOT RUN_DIR
"""

import json
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
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


def main() -> None:
    data_root, run_dir = sys.argv[1], Path(sys.argv[2])
    run_dir.mkdir(parents=True, exist_ok=True)
    with initialize_config_module("moldiff.conf", version_base="1.3"):
        cfg = compose("train", overrides=[
            "model=tiny", "trainer=ddp", "trainer.devices=2", "data.limit=300", "data.subset=64",
            "data.batch_size=8", "data.val_size=8", "trainer.max_steps=4", "checkpoint.every_n_train_steps=2",
            "trainer.enable_progress_bar=false", f"data.root={data_root}", f"run_dir={run_dir}",
            "optim.warmup_steps=1",
        ])
    train(cfg, extra_callbacks=[Recorder(run_dir)])


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
