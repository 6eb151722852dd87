"""Continue a run from its folder: ``mmfw-train resume=<run folder>``.

The run's own composed config (``.hydra/config.yaml``) is loaded again, the last complete checkpoint is handed to
``trainer.fit(ckpt_path=...)`` (Lightning restores weights, optimizer, scheduler, loops and callback state), and the
W&B logger starts the next segment of the run: a new W&B run in the same group, with the same name, whose config says
which run it continues (``resumed_from``); ``run.json`` lists them all (``wandb_run_ids``).

Plain values may change on resume (``trainer.max_epochs=20 model.optimizer.lr=0.1``). ``ConfiguredOptimization``
makes them take effect: the optimizer's hyperparameters and the scheduler come from the config, the optimizer's
moments from the checkpoint. Changes a restored state cannot take are refused before the run folder is touched.

More callbacks make the continuation exact and possible:

* ``last_checkpoint_writer`` writes ``checkpoints/last.ckpt`` after every epoch (the configured ``model_checkpoint``
  keeps the best ones).

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
import warnings
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import CombinedLoader, rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from mmfw.runs import run_folder

log = logging.getLogger(__name__)

WANDB_FACTORY = "mmfw.runs.loggers.wandb_logger"
# What a ReduceLROnPlateau has learnt from the monitored metric; the rest of its state is its configuration.
PLATEAU_PROGRESS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch", "_last_lr")


class ResumeError(ValueError):
    """``resume=<folder>`` cannot continue that folder; the message says what to do instead."""


def load_run_to_resume(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, Path | None]:
    """The config a resumed run trains with, and the checkpoint to continue from (None: start over in the folder).

    Args:
        cfg: the config Hydra composed for this invocation (``resume`` set; its output folder is the run folder).
        overrides: this invocation's command-line overrides. Besides ``resume=``, only plain values may change
            (``trainer.max_epochs=20`` to train longer); swapping a config group would not match the checkpoint.
    """
    run_dir = run_folder.check_run_folder(cfg.resume, key="resume")
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
        before = saved.copy()
        check_restorable(before, saved, apply_value_overrides(saved, changes))
        saved.resume = str(run_dir)
        saved.paths.output_dir = str(output_dir)
        next_wandb_segment(saved, record)
    checkpoint = run_folder.last_checkpoint(run_dir)
    if checkpoint is None:
        log.warning("%s has no complete checkpoint yet: training starts over in the same folder", run_dir)
    else:
        log.info("Resuming %s from %s", run_dir, checkpoint)
    return saved, checkpoint


def apply_value_overrides(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """Apply ``key=value`` overrides of existing leaf values and return their keys; others raise ``ResumeError``."""
    keys = []
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
        keys.append(key)
    return keys


def check_restorable(before: DictConfig, after: DictConfig, changed: list[str]) -> None:
    """Refuse changed keys that the checkpoint's optimizer or scheduler state cannot follow.

    Optimizer hyperparameters and epoch-driven schedules are re-applied after the restore (``ConfiguredOptimization``);
    an optimizer's moments belong to its class, and a ``ReduceLROnPlateau`` schedule cannot be replayed: the rate it
    reached depends on the metrics it saw.
    """
    schedulers = {OmegaConf.select(cfg, "model.scheduler._target_") for cfg in (before, after)}
    plateau = sorted(target for target in schedulers if _is_plateau(target))
    for key in changed:
        if key == "model.optimizer._target_":
            raise ResumeError(
                f"cannot change {key} on resume: the checkpoint holds the state of "
                f"{OmegaConf.select(before, key)}. Start a new run to train with another optimizer."
            )
        if plateau and key in ("model.optimizer.lr", "model.scheduler._target_"):
            raise ResumeError(
                f"cannot change {key} on resume with the {plateau[0]} scheduler: it lowers the rate when "
                "the monitored metric stalls, so the rate for the epochs already trained cannot be recomputed. "
                "Start a new run, or change the scheduler's own values (e.g. model.scheduler.patience)."
            )


def _is_plateau(target: str | None) -> bool:
    return target is not None and issubclass(hydra.utils.get_class(target), torch.optim.lr_scheduler.ReduceLROnPlateau)


def next_wandb_segment(cfg: DictConfig, record: dict) -> None:
    """Point every mmfw W&B logger at a new run that continues the recorded one: same group and name.

    The run is new (not the recorded id again) because wandb cannot resume an offline run; see
    ``mmfw.runs.loggers.wandb_logger``.
    """
    if not record.get("wandb_run_id"):
        return
    for node in (cfg.get("logger") or {}).values():
        if node is not None and node.get("_target_") == WANDB_FACTORY:
            node.resumed_from = record["wandb_run_id"]
            node.segment = len(record.get("wandb_run_ids") or [record["wandb_run_id"]])
            node.group = record.get("wandb_group", node.get("group"))
            node.name = record.get("wandb_name", node.get("name"))


@rank_zero_only
def record_wandb_segment(run_dir: Path, run) -> None:
    """Record this process's W&B run in run.json: ``wandb_run_id`` is the latest, ``wandb_run_ids`` all segments."""
    record = run_folder.read_run_json(run_dir)
    previous = record.get("wandb_run_ids") or ([record["wandb_run_id"]] if record.get("wandb_run_id") else [])
    run_folder.update_run_json(
        run_dir, wandb_run_id=run.id, wandb_run_ids=[*previous, run.id], wandb_group=run.group, wandb_name=run.name
    )


def check_checkpoint_fits(
    model: torch.nn.Module, checkpoint: Path, saved: dict, *, max_epochs: int | None, overrides: list[str]
) -> None:
    """Refuse, before the run folder changes, a resumed config whose model or horizon the checkpoint cannot continue.

    Args:
        model: the module built from the resumed run's config (with the values changed on resume).
        checkpoint: the checkpoint's path (named in the errors); ``saved`` is its content
            (``run_folder.load_checkpoint``).
        max_epochs: ``trainer.max_epochs``; it must leave an epoch to train after the checkpoint's.
        overrides: this invocation's overrides; the values changed on resume are named in the error.
    """
    changes = [override for override in overrides if not override.startswith(("resume=", "hydra."))]
    weights, current = saved["state_dict"], model.state_dict()
    differences = [f"{key} is not in the checkpoint" for key in sorted(current.keys() - weights.keys())]
    differences += [f"{key} is only in the checkpoint" for key in sorted(weights.keys() - current.keys())]
    differences += [
        f"{key} has shape {tuple(weights[key].shape)} in the checkpoint, {tuple(value.shape)} now"
        for key, value in current.items()
        if key in weights and weights[key].shape != value.shape
    ]
    if differences:
        raise ResumeError(
            f"the model built for the resumed run does not fit {checkpoint}: {'; '.join(differences[:5])}. "
            f"A value changed on resume ({' '.join(changes) or 'none'}) changes the architecture: "
            "start a new run for it, or resume without that change."
        )
    epoch = int(saved["epoch"])
    if max_epochs is not None and max_epochs != -1 and max_epochs <= epoch:
        raise ResumeError(
            f"trainer.max_epochs={max_epochs} ends before {checkpoint}: the run had reached {epoch + 1} epochs (the "
            "last perhaps in part). trainer.max_epochs counts every epoch of the run, those before the resume too: "
            f"set it above {epoch}."
        )


@rank_zero_only
def keep_csv_history(loggers: list, step: int) -> None:
    """Keep the rows a resumed run logged before its checkpoint: Lightning's CSVLogger deletes metrics.csv on start.

    Rows logged at or after the checkpoint's global ``step`` (by the part of an epoch that is trained again) are
    dropped, not duplicated.
    """
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


def last_checkpoint_writer(checkpoint_dir: Path) -> ModelCheckpoint:
    """Write ``<checkpoint_dir>/last.ckpt`` after every epoch's validation: what ``resume=`` continues from.

    ``ModelCheckpoint(save_last=True)`` is not enough since Lightning 2.6: it writes ``last.ckpt`` only when it saves
    a top-k checkpoint at the same step, so with ``save_top_k: 1`` it is the best epoch's, and a resume would go back
    to the last improvement and drop the epochs after it.
    """
    return ModelCheckpoint(
        dirpath=checkpoint_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )


def fault_tolerance_callbacks(*, seed: int, checkpoint_dir: Path) -> list[pl.Callback]:
    """The callbacks every training run gets, whatever ``callbacks=`` says: resumption depends on them."""
    return [EpochSeed(seed), CheckpointOnInterrupt(), ConfiguredOptimization(), last_checkpoint_writer(checkpoint_dir)]
