"""Fit and test one run and record it: the part of ``mmfw.runs.job`` that needs torch and Lightning.

The run folder gets the resolved config, git state and versions when training starts (``record_start``), the
test metrics and the best checkpoint when it completes (``record_result``); every logger gets the same config.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from mmfw import feature_cache
from mmfw.runs import resume, run_folder, sweep
from mmfw.runs.config import instantiate_group
from mmfw.runs.job import RunState
from mmfw.runs.loggers import dashboard_hparams, log_config, log_summary, run_summary
from mmfw.threads import apply_thread_policy

log = logging.getLogger(__name__)


def fit_and_test(
    cfg: DictConfig,
    *,
    build: Callable[[DictConfig], tuple[pl.LightningDataModule, pl.LightningModule]],
    run_dir: Path,
    checkpoint: Path | None,
    state: RunState,
) -> float | None:
    """Build, fit (continuing ``checkpoint`` when resuming), test the best checkpoint; ``state`` gets the trainer and
    loggers as soon as they exist, so that a failure can be recorded with them."""
    threads = apply_thread_policy(cfg.get("threads", "auto"), cfg.trainer, launcher=launcher_config())
    torch.set_float32_matmul_precision(cfg.get("float32_matmul_precision", "highest"))
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model = build(cfg)
    if checkpoint is not None:
        resume.check_checkpoint_fits(
            model, checkpoint, state.saved, max_epochs=cfg.trainer.get("max_epochs"), overrides=sweep.task_overrides()
        )
    state.loggers = instantiate_group(cfg.get("logger"))
    dashboard = dashboard_hparams(cfg, model, run_dir=run_dir, overrides=sweep.task_overrides())
    if checkpoint is not None:
        resume.keep_csv_history(state.loggers, step=int(state.saved.get("global_step", 0)))
        state.saved = None  # Lightning loads the checkpoint itself in fit()
    # Every callback comes from `callbacks`: the resume ones too (conf/callbacks/default.yaml, mmfw.runs.callbacks).
    callbacks = instantiate_group(cfg.get("callbacks"))
    state.trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=state.loggers or False)
    record_start(cfg, run_dir, state.loggers, datamodule, dashboard=dashboard, resumed=checkpoint, threads=threads)
    write_splits(datamodule, run_dir)
    write_preprocessing(datamodule, run_dir)
    # weights_only: checkpoints are data; torch's default can be switched off by TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.
    state.trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    return test_and_record(cfg, run_dir, state.trainer, model, datamodule, state.loggers, dashboard=dashboard)


def test_and_record(
    cfg: DictConfig,
    run_dir: Path,
    trainer: pl.Trainer,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    loggers: list[Any],
    *,
    dashboard: dict[str, Any],
) -> float | None:
    """Test the best checkpoint (``test: true``), mark the run completed with its metrics and hand the loggers the
    summary a dashboard compares runs on (:func:`mmfw.runs.loggers.log_summary`); the best score."""
    checkpointer = trainer.checkpoint_callback
    best = checkpointer.best_model_path if checkpointer is not None and checkpointer.best_model_path else None
    test_metrics = {}
    if cfg.get("test"):
        trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)
        test_metrics = metrics_with_prefix(trainer, "test/")
    score = best_score(trainer, cfg.monitor.metric)
    if rank_zero_only.rank == 0:  # inside the caller's try: a disk that is full now still gets the run marked failed
        if test_metrics:
            (run_dir / "test_metrics.json").write_text(json.dumps(test_metrics, indent=2) + "\n")
        if isinstance(datamodule, feature_cache.FeatureCacheDataModule):
            run_folder.update_run_json(run_dir, feature_cache=datamodule.describe())  # with this run's lookups
        run_folder.finish_run(
            run_dir,
            status="completed",
            best_checkpoint=os.path.relpath(best, run_dir) if best else None,
            monitor={"metric": cfg.monitor.metric, "mode": cfg.monitor.mode, "best": score},
            test_metrics=test_metrics,
        )
        log.info("Run folder: %s", run_dir)
        if cfg.get("baseline"):
            test_metrics = {**test_metrics, **run_linear_baseline(run_dir, datamodule)}
        summary = run_summary(monitor=cfg.monitor.metric, best=score, test_metrics=test_metrics)
        log_summary(loggers, summary, dashboard=dashboard, step=trainer.global_step)
    return score


def launcher_config() -> dict[str, Any] | None:
    """The Hydra launcher's config (a parallel launcher's ``n_jobs`` shares the cores); None outside Hydra."""
    try:
        return OmegaConf.to_container(HydraConfig.get().launcher, resolve=True)
    except ValueError:  # no Hydra runtime (train() called directly)
        return None


def run_linear_baseline(run_dir: Path, datamodule: pl.LightningDataModule) -> dict[str, float]:
    """``baseline=true``: the linear baseline on the run's own splits (mmfw.baseline); its test metrics are merged
    into the run folder and returned for the loggers' summaries."""
    from mmfw.baseline import run_baseline  # scikit-learn: only when asked for

    return run_baseline(run_dir, datamodule=datamodule)["test_metrics"]


def best_score(trainer: pl.Trainer, metric: str) -> float | None:
    """The best ``metric`` of the whole run; the checkpoint callback's record survives a resume."""
    checkpointer = trainer.checkpoint_callback
    score = (
        getattr(checkpointer, "best_model_score", None) if getattr(checkpointer, "monitor", None) == metric else None
    )
    if score is None:
        score = trainer.callback_metrics.get(f"{metric}_best", trainer.callback_metrics.get(metric))
    return float(score) if score is not None else None


def metrics_with_prefix(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(prefix)}


@rank_zero_only
def write_splits(datamodule: pl.LightningDataModule, run_dir: Path) -> None:
    """``<run>/splits.csv``: which split each manifest row is in, for a datamodule that can tell
    (``write_splits(path)``)."""
    datamodule.write_splits(run_dir / "splits.csv")


@rank_zero_only
def write_preprocessing(datamodule: pl.LightningDataModule, run_dir: Path) -> None:
    """``<run>/preprocessing.pt``: the training split's fitted preprocessing, which ``mmfw.load_run`` reads instead
    of the training data (``save_preprocessing(path)``)."""
    datamodule.save_preprocessing(run_dir / run_folder.PREPROCESSING)


@rank_zero_only
def record_start(
    cfg: DictConfig,
    run_dir: Path,
    loggers: list[Any],
    datamodule: pl.LightningDataModule,
    *,
    dashboard: dict[str, Any],
    resumed: Path | None,
    threads: Any,
) -> None:
    """Write the resolved config, git commit and versions into the run folder and hand them to every logger.

    The samples the datamodule skipped as bad (``on_bad_sample: skip``) are written to ``skipped_samples.json`` so
    nothing is dropped silently; run.json counts, per text modality, the texts its tokenizer cut (``truncated``).
    """
    resolved = OmegaConf.to_container(cfg, resolve=True)
    overrides = sweep.task_overrides()
    if cfg.get("resume"):
        run_folder.resume_run(
            run_dir, resolved_config_yaml=OmegaConf.to_yaml(resolved), checkpoint=resumed, overrides=overrides
        )
    else:
        run_folder.start_run(run_dir, resolved_config_yaml=OmegaConf.to_yaml(resolved), overrides=overrides)
    skipped = datamodule.skipped
    if skipped:
        (run_dir / "skipped_samples.json").write_text(json.dumps(skipped, indent=2, default=str) + "\n")
        log.warning("%d bad samples were skipped; see %s", len(skipped), run_dir / "skipped_samples.json")
        run_folder.update_run_json(run_dir, skipped_samples=len(skipped))
    run_folder.update_run_json(run_dir, truncated=dict(datamodule.truncated))
    log_config(loggers, {**resolved, "overrides": overrides, "git": run_folder.run_git_state()}, dashboard)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            # A resumed run logs its next segment with this group and name (see mmfw.runs.resume).
            resume.record_wandb_segment(run_dir, logger.experiment)
    extra = (
        {"feature_cache": datamodule.describe()} if isinstance(datamodule, feature_cache.FeatureCacheDataModule) else {}
    )
    if datamodule.fold is not None:  # a cross-validation fold: mmfw-compare groups runs by it
        extra["fold"] = datamodule.fold
    run_folder.update_run_json(run_dir, threads=threads, **extra)
