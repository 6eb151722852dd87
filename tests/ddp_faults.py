"""Faults injected into DDP test runs (``+callbacks.<name>._target_=ddp_faults.<Class>``, tests/ on PYTHONPATH)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class RankZeroCollective(pl.Callback):
    """At the end of the first training epoch rank 0 alone all-reduces: the ranks' collectives fall out of step."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank == 0 and trainer.current_epoch == 0:
            trainer.strategy.reduce(torch.zeros(1), reduce_op="sum")
