"""Continue a run from its folder: ``mmfw-train resume=<run folder>``.

The run's own composed config (``.hydra/config.yaml``) is loaded again, the last complete checkpoint is handed to
``trainer.fit(ckpt_path=...)`` (Lightning restores weights, optimizer, scheduler, loops and callback state), and the
W&B logger continues the run id recorded in ``run.json``. Two callbacks make the continuation exact and possible:

* ``EpochSeed`` reseeds every random number generator at the start of each epoch from ``(seed, epoch)``, so epoch k
  sees the same shuffling and dropout whether or not the process was restarted before it.
* ``CheckpointOnInterrupt`` writes ``checkpoints/last.ckpt`` when the run is stopped by SIGTERM (a scheduler's
  preemption) or Ctrl-C. It does not save on errors: a NaN loss must not overwrite the last good checkpoint.

``csv/metrics.csv`` keeps the rows logged before the checkpoint (``keep_csv_history``).
"""

from __future__ import annotations

import csv
import logging
import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import CombinedLoader, rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from mmfw import run_folder

log = logging.getLogger(__name__)

WANDB_FACTORY = "mmfw.loggers.wandb_logger"


class ResumeError(ValueError):
    """``resume=<folder>`` cannot continue that folder; the message says what to do instead."""


def load_run_to_resume(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, Path | None]:
    """The config a resumed run trains with, and the checkpoint to continue from (None: start over in the folder).

    Args:
        cfg: the config Hydra composed for this invocation (``resume`` set; its output folder is the run folder).
        overrides: this invocation's command-line overrides. Besides ``resume=``, only plain values may change
            (``trainer.max_epochs=20`` to train longer); swapping a config group would not match the checkpoint.
    """
    run_dir = run_folder.check_run_folder(cfg.resume)
    output_dir = Path(cfg.paths.output_dir)
    if output_dir.resolve() != run_dir.resolve():
        raise ResumeError(
            f"resume={cfg.resume} continues a run in its own folder, but this job writes to {output_dir}: "
            "resume works for single runs; to continue a sweep, rerun its command with hydra.sweep.dir=<sweep folder>"
        )
    saved = OmegaConf.load(run_dir / run_folder.HYDRA_CONFIG)
    record = run_folder.read_run_json(run_dir)
    # The run's own overrides are in its config already (a sweep job resumed by rerunning the sweep repeats them).
    started_with = record.get("overrides")
    if started_with is None and (run_dir / ".hydra" / "overrides.yaml").is_file():
        started_with = list(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
    with open_dict(saved):
        changes = [o for o in overrides if not o.startswith(("resume=", "hydra.")) and o not in (started_with or [])]
        apply_value_overrides(saved, changes)
        saved.resume = str(run_dir)
        saved.paths.output_dir = str(output_dir)
        continue_wandb_run(saved, record)
    checkpoint = run_folder.last_checkpoint(run_dir)
    if checkpoint is None:
        log.warning("%s has no complete checkpoint yet: training starts over in the same folder", run_dir)
    else:
        log.info("Resuming %s from %s", run_dir, checkpoint)
    return saved, checkpoint


def apply_value_overrides(cfg: DictConfig, overrides: list[str]) -> None:
    """Apply ``key=value`` overrides of existing leaf values; anything else raises ``ResumeError``."""
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        current = OmegaConf.select(cfg, key, default=KeyError)
        if override.is_sweep_override() or current is KeyError or isinstance(current, DictConfig):
            raise ResumeError(
                f"cannot apply {override.input_line!r} to a resumed run: only values that the run already has can "
                "change (e.g. trainer.max_epochs=20). To change config groups or add keys, start a new run."
            )
        value = override.value()
        OmegaConf.update(cfg, key, ListConfig(value) if isinstance(value, list) else value, merge=False)


def continue_wandb_run(cfg: DictConfig, record: dict) -> None:
    """Point every mmfw W&B logger at the recorded run id, group and name, so the W&B run continues as it was."""
    if not record.get("wandb_run_id"):
        return
    for node in (cfg.get("logger") or {}).values():
        if node is not None and node.get("_target_") == WANDB_FACTORY:
            node.run_id = record["wandb_run_id"]
            node.group = record.get("wandb_group", node.get("group"))
            node.name = record.get("wandb_name", node.get("name"))


@rank_zero_only
def keep_csv_history(loggers: list, checkpoint: Path) -> None:
    """Keep the rows a resumed run logged before its checkpoint: Lightning's CSVLogger deletes metrics.csv on start.

    Rows logged after the checkpoint (by the part of an epoch that is trained again) are dropped, not duplicated.
    """
    step = int(run_folder.load_checkpoint(checkpoint, mmap=True).get("global_step", 0))
    for logger in loggers:
        path = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if path is None or not path.is_file():
            continue
        with open(path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if row.get("step") and int(row["step"]) < step]
        writer = logger.experiment  # creating the writer deletes the file; it rewrites these rows on its first save
        writer.metrics[:0] = [{key: value for key, value in row.items() if value != ""} for row in rows]


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
        dirpath = getattr(checkpointer, "dirpath", None) or Path(trainer.default_root_dir) / run_folder.CHECKPOINT_DIR
        path = Path(dirpath) / "last.ckpt"
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A `save_last: link` checkpoint is a symlink to the best one: replace the link, never write through it.
            path.unlink(missing_ok=True)
        # No barrier here: the other ranks are stopping too, and a collective could hang.
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        trainer.strategy.save_checkpoint(checkpoint, path)
        self.saved = path
        log.warning("Stopped by %s at global step %d: saved %s", type(exception).__name__, trainer.global_step, path)


def fault_tolerance_callbacks(*, seed: int) -> list[pl.Callback]:
    """The callbacks every training run gets, whatever ``callbacks=`` says: resumption depends on them."""
    return [EpochSeed(seed), CheckpointOnInterrupt()]
