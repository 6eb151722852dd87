"""Training throughput of one mmfw run: pairs per second over the epochs after the first (training plus validation,
as bench/step_overhead.py times them), printed as one JSON line. bench/gpu_check.sh runs it on GPUs.

    python bench/throughput.py --out /tmp/tp trainer=gpu_bf16
    python bench/throughput.py --out /tmp/tp-ddp trainer=ddp trainer.devices=4 trainer.precision=bf16-mixed

Under trainer=ddp Lightning starts the other ranks by running this script again with the same arguments; each rank
reads the same data (its share of every epoch) and rank 0 prints.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from _common import EPOCH_TIMES, compose_config
from omegaconf import open_dict

from mmfw.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="run folder (the same for every rank)")
    parser.add_argument("--epochs", type=int, default=3, help="the first is warm-up (cuDNN benchmark, compile)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. trainer=gpu_bf16")
    args = parser.parse_args()
    overrides = [f"trainer.max_epochs={args.epochs}", "callbacks.early_stopping=null", "test=false", *args.overrides]
    cfg = compose_config(overrides, args.out)
    with open_dict(cfg):
        cfg.callbacks.epoch_timer = {"_target_": "_common.EpochTimer"}
    train(cfg)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        measured = EPOCH_TIMES[1:] or EPOCH_TIMES
        pairs = int(cfg.datamodule.train_size) + int(cfg.datamodule.val_size)
        print(
            json.dumps(
                {
                    "overrides": args.overrides,
                    "epoch_s": [round(t, 3) for t in EPOCH_TIMES],
                    "pairs_per_s": round(pairs * len(measured) / sum(measured), 1),
                }
            )
        )


if __name__ == "__main__":
    main()
