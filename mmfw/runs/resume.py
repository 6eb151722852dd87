"""Continue a run from its folder: ``mmfw-train resume=<run folder>``.

The run's own composed config (``.hydra/config.yaml``) is loaded again, the last complete checkpoint is handed to
``trainer.fit(ckpt_path=...)`` (Lightning restores weights, optimizer, scheduler, loops and callback state), and the
W&B logger starts the next segment of the run: a new W&B run in the same group, with the same name, whose config says
which run it continues (``resumed_from``); ``run.json`` lists them all (``wandb_run_ids``).

Plain values may change on resume (``trainer.max_epochs=20 model.optimizer.lr=0.1``). ``ConfiguredOptimization``
makes them take effect: the optimizer's hyperparameters and the scheduler come from the config, the optimizer's
moments from the checkpoint. Changes a restored state cannot take are refused before the run folder is touched.

It needs the callbacks of conf/callbacks/default.yaml (``REQUIRED_CALLBACKS``, see ``mmfw.runs.callbacks``): a run
configured without them is refused, naming the missing ``callbacks.<name>``.

``csv/metrics.csv`` keeps the rows logged before the checkpoint (``keep_csv_history``).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from mmfw.runs import run_folder

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

WANDB_FACTORY = "mmfw.runs.loggers.wandb_logger"
# The callbacks (conf/callbacks/default.yaml) without which a resumed run would not continue exactly, or could not
# be resumed again: callbacks.<name> -> what it is for.
REQUIRED_CALLBACKS = {
    "last_checkpoint": "writes checkpoints/last.ckpt after every epoch, what the next resume continues from",
    "epoch_seed": "reseeds each epoch from (seed, epoch), so the resumed epochs see the same data order",
    "checkpoint_on_interrupt": "saves checkpoints/last.ckpt when the run is stopped by SIGTERM or Ctrl-C",
    "configured_optimization": "makes values changed on resume (model.optimizer.lr, trainer.max_epochs) take effect",
}


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
    check_resumable(saved, run_dir)
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


def check_resumable(saved: DictConfig, run_dir: Path) -> None:
    """Refuse a run whose config lacks a callback of ``REQUIRED_CALLBACKS`` (``callbacks=none``,
    ``callbacks.<name>=null``): nothing is added behind the config's back, so without them the continuation would
    silently differ, or the run could not be resumed again."""
    callbacks = saved.get("callbacks") or {}
    missing = [name for name in REQUIRED_CALLBACKS if callbacks.get(name) is None]
    if missing:
        needs = "; ".join(f"callbacks.{name} ({REQUIRED_CALLBACKS[name]})" for name in missing)
        raise ResumeError(
            f"resume={run_dir}: the run was configured without {needs}. resume= needs the callbacks of "
            "conf/callbacks/default.yaml; the run cannot get them now (its checkpoints were written without them): "
            "start a new run with callbacks=default, or keep these keys when you change callbacks."
        )


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
    if target is None:
        return False
    import torch  # only when the config names a scheduler, whose class is imported anyway

    return issubclass(hydra.utils.get_class(target), torch.optim.lr_scheduler.ReduceLROnPlateau)


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


def record_wandb_segment(run_dir: Path, run: Any) -> None:
    """Record this process's W&B run in run.json: ``wandb_run_id`` is the latest, ``wandb_run_ids`` all segments.

    Rank 0 only (the caller's ``record_start`` runs there)."""
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


def keep_csv_history(loggers: list, step: int) -> None:
    """Keep the rows a resumed run logged before its checkpoint: Lightning's CSVLogger deletes metrics.csv on start.

    Rows logged at or after the checkpoint's global ``step`` (by the part of an epoch that is trained again) are
    dropped, not duplicated. Rank 0 only: the other ranks' CSV loggers write nothing.
    """
    from pytorch_lightning.loggers import CSVLogger  # the loggers are built: Lightning is loaded
    from pytorch_lightning.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    for logger in loggers:
        path = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if path is None or not path.is_file():
            continue
        with open(path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if row.get("step") and int(row["step"]) < step]
        writer = logger.experiment  # creating the writer deletes the file; it rewrites these rows on its first save
        writer.metrics[:0] = [{key: value for key, value in row.items() if value != ""} for row in rows]
