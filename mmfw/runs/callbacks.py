"""The callbacks that make a run resumable, exactly: declared in conf/callbacks/default.yaml, required by ``resume=``.

``callbacks.<name>``              what it does
``last_checkpoint``               (a ``ModelCheckpoint``) writes ``checkpoints/last.ckpt`` after every epoch: what
                                  ``resume=`` continues from (``model_checkpoint`` keeps the best ones)
``epoch_seed``                    ``EpochSeed``: every random number generator reseeded at each epoch start from
                                  ``(seed, epoch)``, so epoch k sees the same shuffling and dropout whether or not the
                                  process was restarted before it
``checkpoint_on_interrupt``       ``CheckpointOnInterrupt``: ``checkpoints/last.ckpt`` written when the run is stopped
                                  by SIGTERM (a scheduler's preemption) or Ctrl-C, never on errors (a NaN loss must
                                  not overwrite the last good checkpoint)
``configured_optimization``       ``ConfiguredOptimization``: values changed on resume (``model.optimizer.lr=0.1``,
                                  ``trainer.max_epochs=20``) take effect on the restored optimizer and schedule

``callbacks=none`` runs without any of them (nothing is added behind the config's back); ``resume=`` of such a run is
refused, naming the missing key (``mmfw.runs.resume.check_resumable``).
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import RichProgressBar as LightningRichProgressBar
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import CombinedLoader
from pytorch_lightning.utilities.exceptions import SIGTERMException

from mmfw.runs.run_folder import CHECKPOINT_DIR

log = logging.getLogger(__name__)

# What a ReduceLROnPlateau has learnt from the monitored metric; the rest of its state is its configuration.
PLATEAU_PROGRESS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch", "_last_lr")


def checkpoint_state(trainer: pl.Trainer) -> dict[str, Any]:
    """What ``trainer.save_checkpoint`` writes (weights, optimizers, loops, callbacks), without its closing barrier.

    Lightning has no public call for this: ``Trainer.save_checkpoint`` ends with ``strategy.barrier()``, and a run
    stopping under DDP must not enter a collective (the other ranks may be stopping at another point, or be gone, and
    the barrier would hang). ``tests/test_private_apis.py`` fails if Lightning's private ``dump_checkpoint`` changes.
    """
    return trainer._checkpoint_connector.dump_checkpoint(weights_only=False)


class EpochSeed(pl.Callback):
    """Seed python, numpy, torch (CPU and CUDA) and the training sampler from ``(seed, epoch)`` at each epoch start.

    A plain ``RandomSampler`` draws each epoch's order from a generator whose state lives only in memory; after a
    restart it would begin again at epoch 0's order. Like ``DistributedSampler.set_epoch``, this makes epoch k's
    randomness a function of k alone. The sampler gets its own generator: the DataLoader's generator also draws worker
    base seeds when an iterator is created, which happens at different points in a fresh and a resumed process.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def epoch_seed(self, epoch: int) -> int:
        return (self.seed * 1_000_003 + epoch) % (2**63)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A run resumed from a mid-epoch checkpoint (SIGTERM) skips on_train_epoch_start for that epoch.
        self._reseed(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reseed(trainer)

    def _reseed(self, trainer: pl.Trainer) -> None:
        seed = self.epoch_seed(trainer.current_epoch)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        # Different ranks get different streams (dropout), each still a function of (seed, epoch).
        torch.manual_seed(seed + trainer.global_rank)
        for loader in CombinedLoader(trainer.train_dataloader).flattened:
            sampler = getattr(loader, "sampler", None)
            if isinstance(sampler, torch.utils.data.RandomSampler):
                sampler.generator = torch.Generator().manual_seed(seed)


class RichProgressBar(LightningRichProgressBar):
    """Lightning's rich progress bar, moved and given new metric values at its refresh rate, not after every batch.

    Lightning's bar (2.6) reads ``get_metrics`` (the logged progress-bar values, each turned into a float: a
    host-device sync on a GPU) and updates the rich task after every training batch, although the display is redrawn
    only ``refresh_rate`` times a second: ~2-3 ms a step on a CPU, 10-20 % of a batch-8 step of the default model
    (bench/step_overhead.py). Here a training batch updates the bar only when ``1 / refresh_rate`` seconds have passed
    since the last update, and always on the epoch's last batch; the epoch's end sets the final count and metrics as
    Lightning's does. Validation and test bars are Lightning's (no metrics are read per batch there).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._next_update = 0.0
        self._train_batches_done = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._train_batches_done = batch_idx + 1
        if self.is_enabled and self.train_progress_bar_id is not None:
            now = time.monotonic()
            if now < self._next_update and self._train_batches_done < self.total_train_batches:
                return
            self._next_update = now + 1 / self.refresh_rate
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, completed=self._train_batches_done)
        super().on_train_epoch_end(trainer, pl_module)  # the epoch's last metrics, redrawn


class CheckpointOnInterrupt(pl.Callback):
    """On SIGTERM or Ctrl-C, write ``<run>/checkpoints/last.ckpt`` so ``resume=<run folder>`` continues from there.

    Lightning stops after the current batch when it receives SIGTERM (it raises ``SIGTERMException``); the checkpoint
    is then mid-epoch, which Lightning resumes but not bit-identically (the epoch's data order restarts). Errors such
    as ``NonFiniteLossError`` save nothing: the last good checkpoint stays.
    """

    def __init__(self) -> None:
        self.saved: Path | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException | KeyboardInterrupt) or trainer.state.fn != TrainerFn.FITTING:
            return
        checkpointer = trainer.checkpoint_callback
        dirpath = getattr(checkpointer, "dirpath", None) or Path(trainer.default_root_dir) / CHECKPOINT_DIR
        path = Path(dirpath) / "last.ckpt"
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A `save_last: link` checkpoint is a symlink to the best one: replace the link, never write through it.
            path.unlink(missing_ok=True)
        trainer.strategy.save_checkpoint(checkpoint_state(trainer), path)
        self.saved = path
        log.warning("Stopped by %s at global step %d: saved %s", type(exception).__name__, trainer.global_step, path)


class ConfiguredOptimization(pl.Callback):
    """On resume, take the optimizer's hyperparameters and the LR schedule from the run's config, not the checkpoint.

    Lightning restores optimizer and scheduler state dicts whole, so a resume with ``model.optimizer.lr=0.1`` or
    ``trainer.max_epochs=20`` (the cosine horizon) would keep the old values. ``on_load_checkpoint`` receives the
    checkpoint that Lightning restores the optimizers and schedulers from afterwards (with any strategy); it rewrites
    their hyperparameters there, from optimizers and schedulers configured afresh by ``configure_optimizers``.
    """

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        configured = pl_module.configure_optimizers()
        if isinstance(configured, torch.optim.Optimizer):
            apply_configured_optimization(checkpoint, optimizers=[configured], schedulers=[])
            return
        scheduler = configured.get("lr_scheduler")
        scheduler = scheduler.get("scheduler") if isinstance(scheduler, dict) else scheduler
        apply_configured_optimization(
            checkpoint, optimizers=[configured["optimizer"]], schedulers=[scheduler] if scheduler is not None else []
        )


def apply_configured_optimization(
    checkpoint: dict,
    *,
    optimizers: list[torch.optim.Optimizer],
    schedulers: list[torch.optim.lr_scheduler.LRScheduler],
) -> None:
    """Rewrite ``checkpoint``'s optimizer and scheduler states to follow the configured ones, keeping the progress.

    Args:
        checkpoint: a Lightning checkpoint (``optimizer_states``, ``lr_schedulers``), changed in place.
        optimizers: optimizers just built from the config (epoch 0), in the order of the checkpoint's.
        schedulers: their schedulers, likewise; they are stepped here, so pass objects that are not trained with.

    Each scheduler is stepped to the checkpoint's ``last_epoch``: the rate is then what a run configured like this
    from the start would have now (a new lr and a new cosine horizon both apply). A ``ReduceLROnPlateau`` keeps
    its progress and the rate it reached (``check_restorable`` refuses a new lr for it). The optimizer's other
    hyperparameters (weight decay, betas, ...) come from the config; its state (moments) stays the checkpoint's.
    """
    keep_lr = set()
    for index, (scheduler, saved) in enumerate(zip(schedulers, checkpoint.get("lr_schedulers", []), strict=True)):
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            keep_lr.add(id(scheduler.optimizer))
            state = scheduler.state_dict() | {key: saved[key] for key in PLATEAU_PROGRESS if key in saved}
        else:
            with warnings.catch_warnings():
                # "lr_scheduler.step() before optimizer.step()": no training step happens in a replay.
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(saved["last_epoch"] - scheduler.last_epoch):
                    scheduler.step()
            state = scheduler.state_dict()
        checkpoint["lr_schedulers"][index] = state
    for optimizer, saved in zip(optimizers, checkpoint.get("optimizer_states", []), strict=True):
        for group, saved_group in zip(optimizer.param_groups, saved["param_groups"], strict=True):
            skip = {"params", "lr"} if id(optimizer) in keep_lr else {"params"}
            saved_group.update({key: value for key, value in group.items() if key not in skip})
