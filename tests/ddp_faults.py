"""Faults injected into DDP test runs (``+callbacks.<name>._target_=ddp_faults.<Class>``, tests/ on PYTHONPATH)."""

from __future__ import annotations

import time

import pytorch_lightning as pl


class RankOneStalls(pl.Callback):
    """At the end of the first training epoch rank 1 stalls for ``seconds``: rank 0 waits alone in its next collective.

    A stall rather than an extra collective on one rank: gloo may pair an unmatched collective with the other rank's
    next one, so the ranks would fail in whichever way the mismatch happens to take, not by the timeout.
    """

    def __init__(self, seconds: float = 90.0) -> None:
        self.seconds = seconds

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank == 1 and trainer.current_epoch == 0:
            time.sleep(self.seconds)
